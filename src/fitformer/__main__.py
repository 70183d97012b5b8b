from fitformer.cli import main

main()
