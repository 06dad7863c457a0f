from stream_spk.cli.main import run

run()
