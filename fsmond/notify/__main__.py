import sys

from fsmond.notify.agent import main

sys.exit(main())
