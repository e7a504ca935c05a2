from workbench.driver.process import main

raise SystemExit(main())
