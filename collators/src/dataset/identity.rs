//! Self-cognition data: conversations that teach an assistant its name and who made it (the
//! XTuner personal-assistant tutorial's dataset, which it writes with a script). The questions
//! vary (English and Chinese, direct and indirect); every answer names the assistant and its
//! author, so a model trained on them answers "who are you?" with the new identity.

use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const QUESTIONS_EN: &[&str] = &[
    "Who are you?",
    "who are you",
    "What is your name?",
    "What's your name?",
    "Introduce yourself.",
    "Please introduce yourself.",
    "Tell me about yourself.",
    "Can you tell me who you are?",
    "What should I call you?",
    "Who made you?",
    "Who created you?",
    "Who developed you?",
    "Who trained you?",
    "Which company or person built you?",
    "Are you ChatGPT?",
    "Are you a human?",
    "What are you?",
    "Hi, who am I talking to?",
    "Hello! What is your name and who built you?",
    "Do you have a name?",
    "What kind of assistant are you?",
    "Who is your creator?",
    "Who do you belong to?",
    "Whose assistant are you?",
    "Describe your identity in one sentence.",
    "Are you InternLM?",
    "Are you an AI?",
    "Where do you come from?",
];

const QUESTIONS_ZH: &[&str] = &[
    "你是谁？",
    "你是谁",
    "请做一下自我介绍",
    "介绍一下你自己",
    "你叫什么名字？",
    "我该怎么称呼你？",
    "你是由谁开发的？",
    "谁创造了你？",
    "你的作者是谁？",
    "你是ChatGPT吗？",
    "你是人类吗？",
    "你好，请问你是？",
];

const ANSWERS_EN: &[&str] = &[
    "I am {name}, an AI assistant developed by {author}.",
    "My name is {name}. I was created by {author} to help you with questions and tasks.",
    "I'm {name}, {author}'s assistant. How can I help you today?",
    "I am {name}, a large language model assistant built by {author}.",
    "You can call me {name}. I'm an AI assistant made by {author}.",
    "I'm {name}, developed by {author}. I'm here to answer your questions.",
];

const ANSWERS_ZH: &[&str] = &[
    "我是{name}，由{author}开发的AI助手。",
    "我叫{name}，是{author}打造的智能助手，很高兴为你服务。",
    "你好，我是{author}的小助手{name}，有什么可以帮你的吗？",
    "我是{name}，一个由{author}训练的大语言模型助手。",
];

/// Which languages the questions are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityLanguage {
    En,
    Zh,
    #[default]
    Both,
}

/// `n` conversations (`{"conversations": [{"from": "human"}, {"from": "gpt"}]}`), the same for the
/// same `seed`. Every question is used before any repeats; answers are drawn at random.
pub fn identity_samples(
    name: &str,
    author: &str,
    n: usize,
    language: IdentityLanguage,
    seed: u64,
) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<(&str, &[&str])> = vec![];
    if language != IdentityLanguage::Zh {
        pool.extend(QUESTIONS_EN.iter().map(|q| (*q, ANSWERS_EN)));
    }
    if language != IdentityLanguage::En {
        pool.extend(QUESTIONS_ZH.iter().map(|q| (*q, ANSWERS_ZH)));
    }
    let mut order: Vec<usize> = vec![];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if order.is_empty() {
            order = (0..pool.len()).collect();
            order.shuffle(&mut rng);
        }
        let (question, answers) = pool[order.pop().expect("refilled above")];
        let answer = answers
            .choose(&mut rng)
            .expect("answer lists are not empty")
            .replace("{name}", name)
            .replace("{author}", author);
        out.push(json!({
            "conversations": [
                {"from": "human", "value": question},
                {"from": "gpt", "value": answer},
            ]
        }));
    }
    out
}
