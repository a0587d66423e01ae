from fsmond.cli import fsmond_main

raise SystemExit(fsmond_main())
