from workbench.telemetry.sampler import main

raise SystemExit(main())
