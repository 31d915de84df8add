##! The C++ plugin's path, kept for the scripts and configurations written
##! for it: loads policy/frameworks/conn_key/udptunnel/vxlan_vni. On a Zeek with a
##! built-in UDP source (9.0+) this path is the built-in's, whose keys see no
##! VNIs from this plugin's source: load the udptunnel path there.

@load policy/frameworks/conn_key/udptunnel/vxlan_vni
