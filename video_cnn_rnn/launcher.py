"""The ``video-cnn-rnn`` console script: help that needs no parser is printed at once; anything else goes to
``video_cnn_rnn.cli.main``, imported only then (torch, Lightning and timm take seconds to import).
"""

import sys

from video_cnn_rnn.cli_help import help_request


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    text = help_request([arg for arg in argv if arg != "--verbose"])
    if text is not None:
        print(text, end="")
        raise SystemExit(0 if argv else 2)  # no subcommand at all is a usage error
    from video_cnn_rnn.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
