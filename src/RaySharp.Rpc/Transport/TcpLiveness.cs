using System.Net.Sockets;

namespace RaySharp.Rpc.Transport;

/// <summary>
/// How long a framed connection may go without hearing from its peer before it is declared broken. A peer behind a
/// partition (a link down, a host frozen) sends no FIN and no RST: left to TCP's defaults, a connection with data in
/// flight retransmits for about 15 minutes, a blocking <c>send</c> into its full buffer waits as long, and an idle one
/// is never noticed at all. Two kernel timers bound both cases, so every call waiting on such a peer fails and its
/// retry or recovery path runs:
/// <list type="bullet">
/// <item><c>TCP_USER_TIMEOUT</c>: data written but not acknowledged for <see cref="UnacknowledgedTimeout"/> closes the
/// connection (wakes a blocked <c>send</c> and <c>recv</c> with ETIMEDOUT);</item>
/// <item>keep-alive probes on an idle connection: after <see cref="KeepAliveIdle"/> of silence, one every
/// <see cref="KeepAliveInterval"/>, <see cref="KeepAliveProbes"/> unanswered in a row close it.</item>
/// </list>
/// A partition shorter than these (the defaults allow about 30 s) is ridden out: TCP retransmits once the link is
/// back and no call notices more than the delay.
/// </summary>
internal static class TcpLiveness
{
    /// <summary>Default 30 s; <c>RAYSHARP_TCP_USER_TIMEOUT_MS</c> overrides it (tests shorten it).</summary>
    public static TimeSpan UnacknowledgedTimeout { get; } = FromEnvironment("RAYSHARP_TCP_USER_TIMEOUT_MS", TimeSpan.FromSeconds(30));

    /// <summary>Default 15 s of silence before the first probe.</summary>
    public static TimeSpan KeepAliveIdle { get; } = TimeSpan.FromSeconds(15);

    /// <summary>Default 5 s between probes.</summary>
    public static TimeSpan KeepAliveInterval { get; } = TimeSpan.FromSeconds(5);

    /// <summary>Default 3 unanswered probes.</summary>
    public const int KeepAliveProbes = 3;

    // Linux's <netinet/tcp.h>; .NET names no constant for it.
    private const int TcpUserTimeout = 18;

    /// <summary>Sets both timers on a connected (or about to connect) TCP socket. Best effort: a platform without them keeps TCP's defaults.</summary>
    public static void Configure(Socket socket)
    {
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, (int)KeepAliveIdle.TotalSeconds);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, (int)KeepAliveInterval.TotalSeconds);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, KeepAliveProbes);
            if (OperatingSystem.IsLinux())
                socket.SetRawSocketOption((int)SocketOptionLevel.Tcp, TcpUserTimeout, BitConverter.GetBytes((int)UnacknowledgedTimeout.TotalMilliseconds));
        }
        catch (Exception e) when (e is SocketException or PlatformNotSupportedException or ObjectDisposedException) { }
    }

    private static TimeSpan FromEnvironment(string name, TimeSpan fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var ms) && ms > 0
            ? TimeSpan.FromMilliseconds(ms)
            : fallback;
}
