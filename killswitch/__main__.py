import sys

from killswitch.cli import main

sys.exit(main())
