from kerastl.cli import main

main()
