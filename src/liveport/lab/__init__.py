"""The lab: a whole simulated cloud on one machine out of real OVSDB servers and real
ovs-vswitchd processes on the dummy datapath, plus simulated VMs with pcap capture."""
