"""``python -m slimcnn`` == the ``slimcnn`` command."""

import sys

from slimcnn.cli import main

sys.exit(main())
