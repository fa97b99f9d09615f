import sys

from qsrv.cli import main

sys.exit(main())
