from visctl.cli import main

main()
