import sys

from socbi.cli import main

sys.exit(main())
