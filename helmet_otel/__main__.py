from __future__ import annotations

from helmet_otel.cli.main import main

raise SystemExit(main())
