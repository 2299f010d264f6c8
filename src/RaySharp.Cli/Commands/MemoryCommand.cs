using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary>
/// <c>raysharp memory</c>: the object store of every alive node (used and total shared memory, spilled bytes,
/// objects pulled from other nodes) and its largest objects, as <c>ray memory</c> shows them.
/// </summary>
internal static class MemoryCommand
{
    public static async Task<int> RunAsync(string? address, string? tempDir, string format, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(tempDir);
        var gcsAddress = GcsConnection.ResolveAddress(address, root);
        using var channels = GcsConnection.Channels(root, gcsAddress);
        IReadOnlyList<NodeInfo> nodes;
        try
        {
            nodes = await new GcsClient(channels, gcsAddress).GetAllNodesAsync(aliveOnly: true).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            throw GcsConnection.Unreachable(gcsAddress, e);
        }
        var stats = await Task.WhenAll(nodes.Select(n => StatsAsync(n, cancellationToken))).ConfigureAwait(false);
        var rows = nodes.Zip(stats).OrderBy(x => x.First.NodeIpAddress, StringComparer.Ordinal).Select(x => new
        {
            node_id = x.First.NodeId,
            node_ip_address = x.First.NodeIpAddress,
            error = x.Second.Error,
            capacity_bytes = x.Second.Stats?.Capacity ?? 0,
            used_bytes = x.Second.Stats?.Used ?? 0,
            spilled_bytes = x.Second.Stats?.SpilledBytes ?? 0,
            num_objects = x.Second.Stats?.NumObjects ?? 0,
            num_spilled = x.Second.Stats?.NumSpilled ?? 0,
            num_pulls = x.Second.Stats?.NumPulls ?? 0,
            pulled_bytes = x.Second.Stats?.PulledBytes ?? 0,
            served_bytes = x.Second.Stats?.ServedBytes ?? 0,
            objects = (x.Second.Stats?.Objects ?? []).Select(o => new
            {
                object_id = o.ObjectId,
                size_bytes = o.Size,
                job_id = o.JobId,
                copy = o.Primary ? "primary" : "secondary",
                spilled = o.Spilled,
                pinned_by_readers = o.Pins,
                created_by = o.CreatedBy,
            }).ToList(),
        }).ToList();
        if (format == "json")
        {
            Console.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        var console = AnsiConsole.Console;
        console.WriteLine($"======== Object store memory: {DateTime.Now:yyyy-MM-dd HH:mm:ss} ========");
        var summary = new Table().Border(TableBorder.Simple);
        foreach (var column in new[] { "NODE_IP", "NODE_ID", "USED", "CAPACITY", "OBJECTS", "SPILLED", "PULLED", "SERVED" }) summary.AddColumn(column);
        foreach (var r in rows)
        {
            if (r.error is not null)
            {
                summary.AddRow(r.node_ip_address, r.node_id, "?", "?", "?", "?", "?", Markup.Escape(r.error));
                continue;
            }
            summary.AddRow(r.node_ip_address, r.node_id, Size(r.used_bytes), Size(r.capacity_bytes), r.num_objects.ToString(CultureInfo.InvariantCulture),
                $"{Size(r.spilled_bytes)} ({r.num_spilled})", $"{Size(r.pulled_bytes)} ({r.num_pulls})", Size(r.served_bytes));
        }
        console.Write(summary);
        var objects = new Table().Border(TableBorder.Simple);
        foreach (var column in new[] { "NODE_IP", "OBJECT_ID", "SIZE", "JOB_ID", "COPY", "WHERE", "PINNED_BY_READERS", "CREATED_BY" }) objects.AddColumn(column);
        foreach (var r in rows)
        {
            foreach (var o in r.objects)
            {
                objects.AddRow(r.node_ip_address, o.object_id, Size(o.size_bytes), o.job_id, o.copy, o.spilled ? "disk (spilled)" : "shared memory",
                    o.pinned_by_readers.ToString(CultureInfo.InvariantCulture), Markup.Escape(o.created_by));
            }
        }
        console.WriteLine("Largest objects per node:");
        console.Write(objects);
        return 0;
    }

    private static async Task<(ObjectStoreStats? Stats, string? Error)> StatsAsync(NodeInfo node, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await using var connection = await FramedClient.ConnectAsync(node.NodeIpAddress, node.NodeManagerPort, cancellationToken: timeout.Token).ConfigureAwait(false);
            var bytes = await connection.CallAsync(FramedMethods.ObjectStoreStats, ReadOnlyMemory<byte>.Empty, timeout.Token).ConfigureAwait(false);
            return (ObjectStoreStats.Parser.ParseFrom(bytes), null);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or OperationCanceledException or RemoteCallException)
        {
            return (null, $"the raylet at {node.NodeIpAddress}:{node.NodeManagerPort} did not answer: {e.Message}");
        }
    }

    private static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };
}
