from edsam.cli import main

raise SystemExit(main())
