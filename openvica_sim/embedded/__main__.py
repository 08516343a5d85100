import sys

from openvica_sim.embedded import main

sys.exit(main())
