"""``python -m slimcnn`` == the ``slimcnn`` command."""

import sys

from slimcnn._entry import main

sys.exit(main())
