import sys

from tfrs_model.cli import main

sys.exit(main())
