#!/bin/sh
# export_file NAME PATH: hands a guest file to the host over the second
# serial port (ttyS1); the runner decodes it into the run's results folder.
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{ echo "=== VM-FILE $1 ==="; base64 "$2"; echo "=== VM-END ==="; } > /dev/ttyS1
