#!/bin/sh
# export_file NAME PATH: hands a guest file to the host over the second
# serial port (ttyS1); the runner decodes it into the run's results folder
# (into its subfolder $EXPORT_DIR when that is set: a case of a batch).
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{ echo "=== VM-FILE ${EXPORT_DIR:+$EXPORT_DIR/}$1 ==="; base64 "$2"; echo "=== VM-END ==="; } > /dev/ttyS1
