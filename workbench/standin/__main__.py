from workbench.standin.server import main

raise SystemExit(main())
