using System.Globalization;
using System.Text.Json;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary><c>raysharp status</c>: the node table and resource usage, as <c>ray status</c> shows them.</summary>
internal static class StatusCommand
{
    public static async Task<int> RunAsync(string? address, string? tempDir, string format, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(tempDir);
        var gcsAddress = GcsConnection.ResolveAddress(address, root);
        using var channels = GcsConnection.Channels(root, gcsAddress);
        IReadOnlyList<NodeInfo> nodes;
        GetClusterInfoReply cluster;
        string? autoscaler;
        IReadOnlyList<PlacementGroupTableData> waitingGroups;
        try
        {
            var gcs = new GcsClient(channels, gcsAddress);
            nodes = await gcs.GetAllNodesAsync(aliveOnly: false, cancellationToken).ConfigureAwait(false);
            waitingGroups = [.. (await gcs.PlacementGroups.GetAllPlacementGroupAsync(new GetAllPlacementGroupRequest(), deadline: DateTime.UtcNow.AddSeconds(5),
                    cancellationToken: cancellationToken).ConfigureAwait(false)).PlacementGroups
                .Where(g => g.State is PlacementGroupState.Pending or PlacementGroupState.Rescheduling)];
            cluster = await gcs.Nodes.GetClusterInfoAsync(new GetClusterInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cancellationToken).ConfigureAwait(false);
            // What the head's autoscaler last decided (Ray's status shows it in the same report); null without one.
            autoscaler = await AutoscalerKv.GetStatusAsync(gcs, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            throw GcsConnection.Unreachable(gcsAddress, e);
        }

        if (format == "json")
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                gcs_address = gcsAddress,
                gcs_storage = cluster.Storage,
                gcs_restarts = cluster.GcsRestarts,
                auth = cluster.AuthRequired ? "token" : "none",
                tls = cluster.Tls,
                autoscaler,
                pending_placement_groups = waitingGroups.Select(g => new
                {
                    placement_group_id = g.PlacementGroupId,
                    name = g.Name,
                    strategy = ListPlacementGroupsCommand.StrategyName(g.Strategy),
                    state = ListPlacementGroupsCommand.StateName(g.State),
                    bundles = g.Bundles.Select(b => b.Resources),
                    unplaced_bundles = g.Bundles.Count(b => b.NodeId.Length == 0),
                    infeasible = g.Infeasible,
                    state_message = g.StateMessage,
                }),
                nodes = nodes.Select(n => new
                {
                    node_id = n.NodeId,
                    state = n.State == NodeState.Alive ? "ALIVE" : "DEAD",
                    node_ip_address = n.NodeIpAddress,
                    is_head_node = n.IsHeadNode,
                    node_manager_port = n.NodeManagerPort,
                    resources_total = n.ResourcesTotal,
                    resources_available = n.ResourcesAvailable,
                    death_reason = n.DeathReason,
                }),
            }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }

        var console = AnsiConsole.Console;
        console.WriteLine($"======== Cluster status: {DateTime.Now:yyyy-MM-dd HH:mm:ss} ========");
        console.WriteLine($"GCS address: {gcsAddress}");
        console.WriteLine($"GCS state: {(cluster.Storage.Length > 0 ? cluster.Storage : "memory")}" +
                          (cluster.GcsRestarts > 0 ? $" (GCS restarted {cluster.GcsRestarts} time{(cluster.GcsRestarts == 1 ? "" : "s")})" : ""));
        console.WriteLine($"Transport: {(cluster.Tls ? "mutual TLS" : "plain TCP (no --tls-cert)")}");
        if (cluster.AuthRequired) console.WriteLine("Authentication: cluster token");
        else console.MarkupLine("[red]WARNING: Authentication: none (started with --auth none). Anyone who can reach the cluster's ports can run any code on every node.[/]");
        console.WriteLine();
        console.WriteLine("Node status");
        console.WriteLine(new string('-', 60));
        var alive = nodes.Where(n => n.State == NodeState.Alive).ToList();
        var dead = nodes.Where(n => n.State != NodeState.Alive).ToList();
        console.WriteLine("Active:");
        if (alive.Count == 0) console.WriteLine(" (no active nodes)");
        foreach (var n in alive) console.WriteLine($" 1 node_{n.NodeId} {n.NodeIpAddress}{(n.IsHeadNode ? " (head)" : "")}");
        console.WriteLine("Dead:");
        if (dead.Count == 0) console.WriteLine(" (no dead nodes)");
        foreach (var n in dead) console.WriteLine($" 1 node_{n.NodeId} {n.NodeIpAddress}: {n.DeathReason}");
        console.WriteLine();
        console.WriteLine("Resources");
        console.WriteLine(new string('-', 60));
        console.WriteLine("Usage:");
        var names = alive.SelectMany(n => n.ResourcesTotal.Keys).Where(IsShown).Distinct().OrderBy(ResourceOrder).ThenBy(k => k, StringComparer.Ordinal).ToList();
        if (names.Count == 0) console.WriteLine(" (no resources)");
        foreach (var name in names)
        {
            var total = alive.Sum(n => n.ResourcesTotal.GetValueOrDefault(name));
            var available = alive.Sum(n => n.ResourcesAvailable.TryGetValue(name, out var a) ? a : n.ResourcesTotal.GetValueOrDefault(name));
            console.WriteLine($" {Fmt(total - available)}/{Fmt(total)} {name}");
        }
        console.WriteLine();
        console.WriteLine("Demands:");
        var demands = alive.SelectMany(n => n.PendingDemands.Select(d => (d, infeasible: false)).Concat(n.InfeasibleDemands.Select(d => (d, infeasible: true)))).ToList();
        if (demands.Count == 0 && waitingGroups.Count == 0) console.WriteLine(" (no resource demands)");
        foreach (var (d, infeasible) in demands)
            console.WriteLine($" {ResourceSet.Describe(d.Shape)}: {d.Count}+ pending{(infeasible ? " (infeasible: no node can ever satisfy this; add a node with these resources)" : "")}");
        // As Ray's: groups that print alike are counted together; a group being placed again lists its lost bundles.
        foreach (var g in waitingGroups.GroupBy(DescribeGroup, StringComparer.Ordinal))
        {
            var infeasible = g.Any(x => x.Infeasible);
            console.WriteLine($" {g.Key}: {g.Count()}+ pending placement groups{(infeasible ? $" (infeasible now: {g.First(x => x.Infeasible).StateMessage})" : "")}");
        }
        console.WriteLine();
        if (autoscaler is not null)
        {
            console.WriteLine("Autoscaler");
            console.WriteLine(new string('-', 60));
            console.WriteLine(autoscaler.TrimEnd());
            console.WriteLine();
        }

        var table = new Table().Border(TableBorder.Rounded).Title("Nodes");
        table.AddColumns("Node ID", "State", "IP", "Head", "CPU", "GPU", "Other resources");
        foreach (var n in nodes)
        {
            var isAlive = n.State == NodeState.Alive;
            table.AddRow(
                Markup.Escape(UniqueId.Short(n.NodeId)),
                isAlive ? "[green]ALIVE[/]" : "[red]DEAD[/]",
                Markup.Escape(n.NodeIpAddress),
                n.IsHeadNode ? "yes" : "",
                Markup.Escape(Usage(n, ResourceSet.Cpu)),
                Markup.Escape(Usage(n, ResourceSet.Gpu)),
                Markup.Escape(string.Join(", ", n.ResourcesTotal.Keys.Where(k => IsShown(k) && k is not ResourceSet.Cpu and not ResourceSet.Gpu).Order(StringComparer.Ordinal).Select(k => $"{k} {Usage(n, k)}"))));
        }
        console.Write(table);
        return 0;

        static string DescribeGroup(PlacementGroupTableData g) =>
            string.Join(", ", g.Bundles.Where(b => b.NodeId.Length == 0).GroupBy(b => ResourceSet.Describe(b.Resources), StringComparer.Ordinal).Select(b => $"{b.Key} * {b.Count()}"))
            + $" ({ListPlacementGroupsCommand.StrategyName(g.Strategy)})";
        // A committed bundle's group resources are a view of CPUs and the like counted already (used, in their own rows).
        static bool IsShown(string name) => !name.StartsWith("node:", StringComparison.Ordinal) && !BundleResources.IsGroupResource(name);
        static int ResourceOrder(string name) => name switch { ResourceSet.Cpu => 0, ResourceSet.Gpu => 1, _ => 2 };
        static string Fmt(double v) => v.ToString("0.0##", CultureInfo.InvariantCulture);
        static string Usage(NodeInfo n, string name)
        {
            if (!n.ResourcesTotal.TryGetValue(name, out var total)) return "0/0";
            var available = n.State == NodeState.Alive && n.ResourcesAvailable.TryGetValue(name, out var a) ? a : total;
            return $"{Fmt(total - available)}/{Fmt(total)}";
        }
    }
}
