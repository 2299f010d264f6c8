using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace RaySharp.Common;

/// <summary>Parsing of <c>host:port</c> addresses and discovery of this node's own IP.</summary>
internal static class NodeAddress
{
    public const int DefaultGcsPort = 6379;

    /// <summary>Parses <c>ip:port</c> or <c>host:port</c>; a missing port means the default GCS port.</summary>
    public static bool TryParse(string? text, out string host, out int port, out string error)
    {
        host = "";
        port = DefaultGcsPort;
        error = "";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "the address is empty";
            return false;
        }
        text = text.Trim();
        if (text.Contains("://", StringComparison.Ordinal))
        {
            error = $"'{text}' has a scheme; give the head's address as <ip>:<port>, for example 192.168.0.10:6379";
            return false;
        }
        var colon = text.LastIndexOf(':');
        if (colon < 0)
        {
            host = text;
        }
        else
        {
            host = text[..colon].Trim('[', ']');
            var portText = text[(colon + 1)..];
            if (!int.TryParse(portText, out port) || port is < 1 or > 65535)
            {
                error = $"'{portText}' in '{text}' is not a port number (1-65535)";
                return false;
            }
        }
        if (host.Length == 0 || host.Any(c => char.IsWhiteSpace(c) || c == '/'))
        {
            error = $"'{text}' does not name a host; give the head's address as <ip>:<port>";
            return false;
        }
        return true;
    }

    public static string Format(string host, int port) =>
        IPAddress.TryParse(host, out var ip) && ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{host}]:{port}" : $"{host}:{port}";

    /// <summary>
    /// This node's IP as the rest of the cluster should see it: the source address the kernel would use to reach
    /// <paramref name="towards"/> (the head, for a worker node; found by a UDP connect, which sends nothing), else the
    /// address of the interface that holds the default route, else the first address of an interface that is up,
    /// else loopback.
    /// </summary>
    public static string DetectNodeIp(string? towards = null)
    {
        if (towards is not null && IPAddress.TryParse(towards, out var targetIp))
        {
            if (IPAddress.IsLoopback(targetIp)) return targetIp.ToString();
            try
            {
                using var socket = new Socket(targetIp.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
                socket.Connect(targetIp, 9);
                if (socket.LocalEndPoint is IPEndPoint { Address: var local } && !local.Equals(IPAddress.Any)) return local.ToString();
            }
            catch (SocketException) { /* no route that way; fall back to the interfaces */ }
        }
        var interfaces = NetworkInterface.GetAllNetworkInterfaces()
            .Where(n => n.OperationalStatus is OperationalStatus.Up or OperationalStatus.Unknown && n.NetworkInterfaceType != NetworkInterfaceType.Loopback)
            .ToList();
        var defaultRoute = DefaultRouteInterface();
        foreach (var nic in interfaces.OrderBy(n => n.Name == defaultRoute ? 0 : 1))
        {
            foreach (var addr in nic.GetIPProperties().UnicastAddresses)
            {
                if (addr.Address.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(addr.Address)) return addr.Address.ToString();
            }
        }
        return "127.0.0.1";
    }

    /// <summary>The interface of the IPv4 default route, from the kernel's routing table; null when there is none.</summary>
    private static string? DefaultRouteInterface()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/net/route").Skip(1))
            {
                var fields = line.Split('\t', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                if (fields.Length > 2 && fields[1] == "00000000") return fields[0];
            }
        }
        catch (IOException) { }
        return null;
    }

    /// <summary>True when a TCP listener could bind <paramref name="port"/> on all interfaces right now.</summary>
    public static bool IsPortFree(int port)
    {
        try
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Any, port));
            return true;
        }
        catch (SocketException) { return false; }
    }

    public static int FindFreePort()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Any, 0));
        return ((IPEndPoint)listener.LocalEndPoint!).Port;
    }
}
