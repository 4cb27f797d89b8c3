# shellcheck shell=bash
# ports.sh: sourced by the fixture start scripts; picks loopback TCP ports.
#
# Ports come from below the kernel's ephemeral range (net.ipv4.ip_local_port_range),
# so no outgoing connection of a concurrent test (librados, curl, the OSD's own peers)
# can be handed the port between the pick and the daemon's bind. That happened with
# picks inside the range: "Could not bind to 127.0.0.1:46438 after trying for 30
# seconds". Two fixtures picking the same free port at once is still possible, so the
# callers retry a start whose bind failed with a fresh pick.

# The first port of the ephemeral range (32768 if it cannot be read).
ephemeral_low() {
  local low _
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  [[ $low =~ ^[0-9]+$ ]] && (( low > 12000 )) || low=32768
  echo "$low"
}

# free_port [EXCLUDED...]: a port in [10000, ephemeral_low) that nothing listens on,
# never one of EXCLUDED (the well-known ports of the daemon, so a system one is never
# mistaken for ours).
free_port() {
  local low port x
  low=$(ephemeral_low)
  while :; do
    port=$(( 10000 + (RANDOM * 32768 + RANDOM) % (low - 10000) ))
    for x in "$@"; do [[ $port == "$x" ]] && continue 2; done
    # bash's /dev/tcp connect fails when nothing listens there
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# port_window WIDTH: the first port of WIDTH consecutive ports below the ephemeral
# range (for a daemon that binds any port of a window, e.g. the OSD's ms_bind_port_*).
port_window() {
  local low
  low=$(ephemeral_low)
  echo $(( 10000 + (RANDOM * 32768 + RANDOM) % (low - 10000 - $1) ))
}
