import sys

from rrvmm.cli import main

sys.exit(main())
