from semlens_cli.main import main

main()
