"""``python -m inference_compute nbest|rerank|tune|mbr|sweep|lm --config FILE.yaml``"""

import sys

from .cli import main

sys.exit(main())
