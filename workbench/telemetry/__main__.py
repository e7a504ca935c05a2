from workbench.telemetry.process import main

raise SystemExit(main())
