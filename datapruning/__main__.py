"""``python -m datapruning`` (what torchrun's ``-m datapruning`` runs): the CLI."""

import sys

from datapruning.cli import main

sys.exit(main())
