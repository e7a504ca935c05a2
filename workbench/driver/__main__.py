from workbench.driver.shard import main

raise SystemExit(main())
