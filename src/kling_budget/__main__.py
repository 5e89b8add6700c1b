from kling_budget.cli import main

main()
