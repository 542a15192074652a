import sys

from icl_lens.cli import main

sys.exit(main())
