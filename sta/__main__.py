import sys

from sta.cli import main

sys.exit(main())
