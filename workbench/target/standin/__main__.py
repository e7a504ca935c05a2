from workbench.target.standin.server import main

raise SystemExit(main())
