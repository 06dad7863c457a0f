from stream_spk.cli.main import main

raise SystemExit(main())
