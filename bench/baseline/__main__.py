import sys

from .relay import main

sys.exit(main())
