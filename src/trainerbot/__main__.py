import sys

from trainerbot.cli import main

sys.exit(main())
