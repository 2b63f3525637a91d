from superduperdb.cli import main

main()
