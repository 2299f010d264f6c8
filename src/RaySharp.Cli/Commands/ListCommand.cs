using System.Text.Json;
using Grpc.Core;
using RaySharp.Common;
using RaySharp.Rpc;
using RaySharp.Rpc.Clients;
using RaySharp.Rpc.Protocol;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary><c>raysharp list actors</c>: the GCS actor directory, as <c>ray list actors</c> shows it.</summary>
internal static class ListCommand
{
    public static async Task<int> RunActorsAsync(string? address, string? tempDir, string format, bool includeDead, int limit, CancellationToken cancellationToken)
    {
        var root = SessionDirectory.ResolveRoot(tempDir);
        var gcsAddress = GcsConnection.ResolveAddress(address, root);
        using var channels = GcsConnection.Channels(root, gcsAddress);
        IReadOnlyList<ActorInfo> actors;
        try
        {
            actors = (await new GcsClient(channels, gcsAddress).Actors.ListActorsAsync(new ListActorsRequest { IncludeDead = includeDead },
                cancellationToken: cancellationToken).ConfigureAwait(false)).Actors;
        }
        catch (RpcException e)
        {
            throw GcsConnection.Unreachable(gcsAddress, e);
        }
        var rows = actors.OrderBy(a => a.StartTimeMs).Select(a => new
        {
            actor_id = a.ActorId,
            class_name = a.ClassName,
            state = ProtocolNames.Of(a.State),
            name = a.Name,
            @namespace = a.Namespace,
            job_id = a.JobId,
            node_ip_address = a.Address?.IpAddress ?? "",
            pid = a.Address?.Pid ?? 0,
            num_restarts = a.NumRestarts,
            detached = a.Detached,
            lightweight = a.Lightweight,
            death_cause = a.DeathCause,
        }).ToList();
        if (format == "json")
        {
            Console.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        var console = AnsiConsole.Console;
        ListCommand.WriteStats(console, rows.Select(r => r.state));
        var table = new Table().Border(TableBorder.Simple);
        foreach (var column in new[] { "ACTOR_ID", "CLASS_NAME", "STATE", "NAME", "NODE_IP", "PID", "RESTARTS", "DEATH_CAUSE" }) table.AddColumn(column);
        // As `ray list actors`: the counts cover every actor, the table the first --limit (alive ones first).
        foreach (var r in rows.OrderBy(r => r.state == "DEAD").Take(limit))
        {
            table.AddRow(Markup.Escape(r.actor_id), Markup.Escape(r.class_name), r.state, Markup.Escape(r.name), r.node_ip_address,
                r.pid == 0 ? "" : r.pid.ToString(System.Globalization.CultureInfo.InvariantCulture),
                r.num_restarts.ToString(System.Globalization.CultureInfo.InvariantCulture), Markup.Escape(r.death_cause));
        }
        console.Write(table);
        if (rows.Count > limit) console.WriteLine($"({rows.Count - limit} more not shown; raise --limit, or use --format json)");
        return 0;
    }

    /// <summary>The header every `list` prints, as Ray's: the time, then how many rows there are by state.</summary>
    internal static void WriteStats(IAnsiConsole console, IEnumerable<string> states)
    {
        var all = states.ToList();
        console.WriteLine($"======== List: {DateTime.Now:yyyy-MM-dd HH:mm:ss} ========");
        console.WriteLine("Stats:");
        console.WriteLine(new string('-', 30));
        console.WriteLine($"Total: {all.Count}");
        foreach (var group in all.GroupBy(s => s).OrderBy(g => g.Key, StringComparer.Ordinal)) console.WriteLine($"  {group.Key}: {group.Count()}");
        console.WriteLine();
    }
}
