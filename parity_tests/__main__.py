"""``python -m parity_tests ...`` is ``python -m parity_tests.report ...``."""
import sys

from parity_tests.report import main

sys.exit(main())
