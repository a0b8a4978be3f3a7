from aios_host.cli import main

raise SystemExit(main())
