from video_cnn_rnn.launcher import main

main()
