from video_cnn_rnn.cli import main

main()
