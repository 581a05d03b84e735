# Guest test: the module's KUnit suites ran when /init loaded it; hand the
# kernel log (with their KTAP output) to the host, which parses it.
dmesg > /tmp/dmesg.log
export_file dmesg.log /tmp/dmesg.log
grep -q "virtio_media_protocol" /tmp/dmesg.log
