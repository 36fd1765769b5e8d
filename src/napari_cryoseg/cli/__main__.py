"""``python -m napari_cryoseg.cli``."""

import sys

from napari_cryoseg.cli import main

sys.exit(main())
