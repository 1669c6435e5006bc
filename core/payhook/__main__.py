from payhook.cli import main

main()
