from killswitch.launch import main

main()
