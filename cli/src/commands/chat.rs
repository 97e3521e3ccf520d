//! `lmms chat`: talk to a model (and adapter). With `--message`, each message is answered in
//! turn and the program ends; otherwise it reads messages from standard input. Replies stream
//! to standard output; the speed of each goes to standard error.

use super::common::load_model;
use crate::args::ChatArgs;
use lmms_core::collator::CollateOptions;
use lmms_core::data::Role;
use lmms_core::generate::{GenerateOptions, Generator, conversation};
use std::io::{BufRead, Write};
use std::process::ExitCode;

pub fn run(args: &ChatArgs) -> anyhow::Result<ExitCode> {
    let model = load_model(&args.model, args.model_path.as_deref())?;
    let options = options(args, &model.dir.root)?;
    let mut generator = model.runtime.generator(
        &model.dir,
        args.adapter.as_deref(),
        &CollateOptions::default(),
        args.device,
    )?;
    for image in &args.images {
        if !image.is_file() {
            anyhow::bail!("--image {}: no such file", image.display());
        }
    }
    let mut chat = Chat {
        generator: generator.as_mut(),
        system: args.system.as_deref(),
        turns: vec![],
        images: vec![],
        pending: args.images.clone(),
        options,
    };
    if !args.messages.is_empty() {
        for message in &args.messages {
            println!("user: {message}");
            print!("assistant: ");
            chat.reply(message)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Type a message and press Enter; /image PATH attaches an image, /clear starts over, \
         /exit quits."
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("user> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" | "/clear" => {
                chat.turns.clear();
                chat.images.clear();
                chat.pending.clear();
                eprintln!("(new conversation)");
                continue;
            }
            cmd if cmd.starts_with("/image ") => {
                let path = std::path::PathBuf::from(cmd["/image ".len()..].trim());
                if path.is_file() {
                    eprintln!("(image {} goes with the next message)", path.display());
                    chat.pending.push(path);
                } else {
                    eprintln!("no such file: {}", path.display());
                }
                continue;
            }
            _ => {}
        }
        print!("assistant> ");
        chat.reply(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The model's `generation_config.json` defaults, overridden by the flags given.
fn options(args: &ChatArgs, dir: &std::path::Path) -> anyhow::Result<GenerateOptions> {
    let mut o = GenerateOptions::from_model_dir(dir)?;
    if let Some(t) = args.temperature {
        o.temperature = t;
        if t > 0.0 && args.top_k.is_none() && o.top_k == 0 {
            // transformers samples among the 50 most likely tokens unless told otherwise.
            o.top_k = 50;
        }
    }
    o.max_new_tokens = args.max_new_tokens.unwrap_or(o.max_new_tokens);
    o.top_k = args.top_k.unwrap_or(o.top_k);
    o.top_p = args.top_p.unwrap_or(o.top_p);
    o.repetition_penalty = args.repetition_penalty.unwrap_or(o.repetition_penalty);
    o.seed = args.seed;
    // The messages name the setting first: `top_p must be ...` becomes `--top-p must be ...`.
    o.validate()
        .map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
    Ok(o)
}

struct Chat<'a, 'g> {
    generator: &'a mut (dyn Generator + 'g),
    system: Option<&'a str>,
    turns: Vec<(Role, String)>,
    /// Images of the conversation so far, and those for the next message.
    images: Vec<std::path::PathBuf>,
    pending: Vec<std::path::PathBuf>,
    options: GenerateOptions,
}

impl Chat<'_, '_> {
    /// Answers `message`, streaming the reply, and keeps both in the conversation.
    fn reply(&mut self, message: &str) -> anyhow::Result<()> {
        let placeholder = lmms_collators::dataset::IMAGE_PLACEHOLDER;
        let text = if !message.contains(placeholder) && !self.pending.is_empty() {
            format!("{}\n{message}", placeholder.repeat(self.pending.len()))
        } else {
            message.to_string()
        };
        let before = self.images.len();
        self.images.append(&mut self.pending);
        self.turns.push((Role::User, text));
        let sample = conversation(self.system, &self.turns, &self.images);
        let mut out = std::io::stdout();
        let generation = self
            .generator
            .generate(&sample, &self.options, &mut |piece| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            });
        let generation = match generation {
            Ok(g) => g,
            Err(e) => {
                self.turns.pop();
                self.images.truncate(before);
                return Err(e.into());
            }
        };
        println!();
        let n = generation.ids.len();
        eprintln!(
            "[{n} tokens in {:.2} s, {:.1} tokens/s; prompt {} tokens]",
            generation.seconds,
            n as f64 / generation.seconds.max(1e-9),
            generation.prompt_tokens
        );
        self.turns.push((Role::Assistant, generation.text));
        Ok(())
    }
}
