"""``python -m components.eval_report``: see cli.py."""
import sys

from components.eval_report import cli

sys.exit(cli.main())
