from dice_repro.cli import main

raise SystemExit(main())
