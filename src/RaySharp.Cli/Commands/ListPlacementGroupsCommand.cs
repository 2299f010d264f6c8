using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary><c>raysharp list placement-groups</c>: the GCS's placement group table, as <c>ray list placement-groups</c> shows it.</summary>
internal static class ListPlacementGroupsCommand
{
    public static async Task<int> RunAsync(string? address, string? tempDir, string format, int limit, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(tempDir);
        var gcsAddress = GcsConnection.ResolveAddress(address, root);
        using var channels = GcsConnection.Channels(root, gcsAddress);
        IReadOnlyList<PlacementGroupTableData> groups;
        IReadOnlyList<NodeInfo> nodes;
        try
        {
            var gcs = new GcsClient(channels, gcsAddress);
            groups = (await gcs.PlacementGroups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest { IncludeRemoved = true },
                deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: cancellationToken).ConfigureAwait(false)).PlacementGroups;
            nodes = await gcs.GetAllNodesAsync(aliveOnly: false, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            throw GcsConnection.Unreachable(gcsAddress, e);
        }
        var ips = nodes.GroupBy(n => n.NodeId, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First().NodeIpAddress, StringComparer.Ordinal);
        var rows = groups.OrderBy(g => g.CreationTimeMs).Select(g => new
        {
            placement_group_id = g.PlacementGroupId,
            name = g.Name,
            @namespace = g.RayNamespace,
            strategy = StrategyName(g.Strategy),
            state = StateName(g.State),
            creator_job_id = g.CreatorJobId,
            is_detached = g.IsDetached,
            // Why it is not created (or why it was removed); a created group's last message is history.
            state_message = g.State == PlacementGroupState.Created ? "" : g.StateMessage,
            infeasible = g.Infeasible,
            scheduling_attempts = g.SchedulingAttempts,
            bundles = g.Bundles.OrderBy(b => b.BundleIndex).Select(b => new
            {
                bundle_index = b.BundleIndex,
                resources = b.Resources.OrderBy(r => r.Key, StringComparer.Ordinal).ToDictionary(r => r.Key, r => r.Value, StringComparer.Ordinal),
                node_id = b.NodeId,
                node_ip_address = ips.GetValueOrDefault(b.NodeId) ?? "",
            }).ToList(),
        }).ToList();
        if (format == "json")
        {
            Console.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        var console = AnsiConsole.Console;
        ListCommand.WriteStats(console, rows.Select(r => r.state));
        var table = new Table().Border(TableBorder.Simple);
        foreach (var column in new[] { "PLACEMENT_GROUP_ID", "NAME", "STRATEGY", "STATE", "BUNDLES", "STATE_MESSAGE" }) table.AddColumn(column);
        // Live groups first, as `list actors` puts alive actors first: the counts cover every group, the table the first --limit.
        foreach (var r in rows.OrderBy(r => r.state == "REMOVED").Take(limit))
        {
            var bundles = string.Join("\n", r.bundles.Select(b =>
                $"{b.bundle_index}: {ResourceSet.Describe(b.resources)} @ {(b.node_id.Length == 0 ? "(not placed)" : $"{UniqueId.Short(b.node_id)} {b.node_ip_address}".TrimEnd())}"));
            table.AddRow(Markup.Escape(r.placement_group_id), Markup.Escape(r.name), r.strategy, r.state, Markup.Escape(bundles), Markup.Escape(r.state_message));
        }
        console.Write(table);
        if (rows.Count > limit) console.WriteLine($"({rows.Count - limit} more not shown; raise --limit, or use --format json)");
        return 0;
    }

    public static string StrategyName(PlacementStrategy strategy) => strategy switch
    {
        PlacementStrategy.Spread => "SPREAD",
        PlacementStrategy.StrictPack => "STRICT_PACK",
        PlacementStrategy.StrictSpread => "STRICT_SPREAD",
        _ => "PACK",
    };

    public static string StateName(PlacementGroupState state) => state switch
    {
        PlacementGroupState.Prepared => "PREPARED",
        PlacementGroupState.Created => "CREATED",
        PlacementGroupState.Removed => "REMOVED",
        PlacementGroupState.Rescheduling => "RESCHEDULING",
        _ => "PENDING",
    };
}
