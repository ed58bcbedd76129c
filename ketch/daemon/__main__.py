import sys

from ketch.daemon.main import main

sys.exit(main())
