from img2mesh.cli import main

main()
