"""`python -m imageforge.engine.backends.sdcpp`: build (or find) the cached `sd-server` and print its path."""

import sys

from imageforge.engine.backends.sdcpp.binary import main

sys.exit(main())
